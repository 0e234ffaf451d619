"""params.yaml: its schema (typed, documented dataclasses), loading and cross-field rules; where the
pipeline keeps its files; the corpus formats and tokenizer flags params may name."""
