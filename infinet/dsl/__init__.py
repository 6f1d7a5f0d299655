"""The front end: source text → AST (parser.py) → analysed IR (lower.py)."""
