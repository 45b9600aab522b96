"""The command-line tools: `tianwang` (main), its live view (top), `run --demo` (demo), the
`simulate` contract shared by every simulator, and `decode` (offline captures, as gpsdecode does)."""
