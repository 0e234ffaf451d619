"""Documents in: every corpus format behind one reader, and downloads that resume and verify."""
