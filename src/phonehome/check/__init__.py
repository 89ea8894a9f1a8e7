"""``phonehome check``: a bench's problems, one line each with the fix, before a night is spent on them."""
