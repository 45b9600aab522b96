"""The command-line tools: `tianwang` (main), its live view (top), `run --demo` (demo), the
`simulate` contract shared by every simulator, the device end of a pty they and `replay` play
(ptyline), and `decode` (offline captures, as gpsdecode does)."""
