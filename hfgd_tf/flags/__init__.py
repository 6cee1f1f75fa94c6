"""Command-line flags: one per field of the config dataclasses (hfgd_tf/config.py), assembled into
a checked RunSettings.

  definitions.py  defines each field's flag (name, type, default, help from the field);
  values.py       reads each flag, checks it alone (the field's `check`, `parse`) and together;
  data_dirs.py    the data folder or TFDS dataset and the weights the mode reads must be there;
  settings.py     RunSettings from the flags: checked_settings_from_flags(flag_values, mode), or
                  its two steps, settings_from_flags (no file read) and check_inputs.

settings_from_flags imports no TensorFlow: main.py runs it before importing TensorFlow, so a bad
flag fails in a second; check_inputs runs after (a TFDS dataset's check needs TensorFlow).

To add a flag, add a field to the dataclass it configures with `flag(default, "help", ...)`
(hfgd_tf/config.py): the flag, its default and its checks follow; the code reads the field.
A check across several fields goes in values.check_combinations.
"""

from hfgd_tf.flags.data_dirs import check_inputs
from hfgd_tf.flags.definitions import define_all_flags
from hfgd_tf.flags.settings import checked_settings_from_flags, settings_from_flags

__all__ = ["check_inputs", "checked_settings_from_flags", "define_all_flags",
           "settings_from_flags"]
