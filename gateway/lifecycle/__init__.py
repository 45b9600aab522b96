"""The device lifecycle: config (YAML -> frozen pydantic models), the registry of drivers (the
`tianwang.drivers` entry-point group), the driver API (what a driver is and what the supervisor
hands it), the supervisor (one task per device: health, backoff, reload), and the state files
drivers keep across restarts (statefile.py)."""
