"""The trained model as a stock Hugging Face transformers model, proved equal before it is written."""
