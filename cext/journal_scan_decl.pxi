# Reading framed entries back from a journal segment block (twin: cext/journal_scan_py.py).
# No classes: scan_entries is a module function.
