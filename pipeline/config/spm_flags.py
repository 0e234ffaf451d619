"""The SentencePiece trainer flags params may set under `tokenizer:`."""

# Flags of SentencePiece 0.2.3's trainer (TrainerSpec and NormalizerSpec), passed through verbatim.
SENTENCEPIECE_FLAGS = frozenset(
    {
        "accept_language",
        "add_dummy_prefix",
        "allow_whitespace_only_pieces",
        "auto_character_coverage",
        "bos_id",
        "bos_piece",
        "byte_fallback",
        "character_coverage",
        "control_symbols",
        "denormalization_rule_tsv",
        "differential_privacy_clipping_threshold",
        "differential_privacy_noise_level",
        "enable_differential_privacy",
        "eos_id",
        "eos_piece",
        "escape_whitespaces",
        "hard_vocab_limit",
        "input_format",
        "input_sentence_size",
        "max_sentence_length",
        "max_sentencepiece_length",
        "mining_sentence_size",
        "model_type",
        "normalization_rule_name",
        "normalization_rule_tsv",
        "num_sub_iterations",
        "num_threads",
        "pad_id",
        "pad_piece",
        "pretokenization_delimiter",
        "remove_extra_whitespaces",
        "required_chars",
        "seed_sentencepiece_size",
        "seed_sentencepieces_file",
        "self_test_sample_size",
        "shrinking_factor",
        "shuffle_input_sentence",
        "split_by_number",
        "split_by_unicode_script",
        "split_by_whitespace",
        "split_digits",
        "train_extremely_large_corpus",
        "training_sentence_size",
        "treat_whitespace_as_suffix",
        "unk_id",
        "unk_piece",
        "unk_surface",
        "use_all_vocab",
        "user_defined_symbols",
        "vocab_size",
        "vocabulary_output_piece_score",
    }
)
# Derived from the pipeline's paths, so a params file cannot point them elsewhere.
DERIVED_FLAGS = {"input": "data/corpus/<shard>.txt", "model_prefix": "data/tokenizer/spm"}

# Flags the exact trainer (tokenizer.trainer: exact) cannot honour as spm_train does: refused at start-up.
EXACT_TRAINER_REFUSES = {
    "enable_differential_privacy": "differential privacy adds random noise to the counts",
    "differential_privacy_noise_level": "differential privacy adds random noise to the counts",
    "differential_privacy_clipping_threshold": "differential privacy adds random noise to the counts",
    "seed_sentencepieces_file": "seed pieces are for the unigram model",
    "auto_character_coverage": "its automatic share of characters and merges is not reproduced",
}
TRAINERS = ("exact", "spm")  # tokenizer.trainer: pipeline/tokenizer/exact_bpe.py, or SentencePiece's spm_train
