"""What every stage shares and no output depends on: errors, start and stop, progress bars and
summaries, whole-or-nothing files, watched worker processes, the machine, PNG pictures."""
