"""The embedded default student: a tiny Llama-style model and a character tokenizer, built locally."""
