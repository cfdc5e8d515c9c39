"""Names shared with NNCF's ``nncf.definitions`` that users put in their data."""

from __future__ import annotations

# A key of a calibration item (a dict) for stateful OpenVINO models (ReadValue/Assign): True
# resets the model's state before the item, False carries the state of the previous item on.
# Without it every item starts from the initial state, as in NNCF.
NNCF_DATASET_RESET_STATE_KEY = "nncf_reset_state"
