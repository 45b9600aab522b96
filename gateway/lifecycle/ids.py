"""What a device id may be, in a module light enough for `tianwang decode` (no pydantic)."""

import re

# A device id is one topic level: no '/', no MQTT wildcards, printable, bounded.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
