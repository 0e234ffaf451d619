"""Working with the pipeline from outside DVC: the `pile-gpt` command and dvc.lock merged stage by
stage across machines."""
