"""The tokenizer: its training text sampled from the corpus, its training, and what a trained
model's pieces let an encoder assume."""
