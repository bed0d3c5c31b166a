"""Constants shared by the library and the CLI (kept import-free so the CLI starts fast)."""

# The paper's best variant (wSCE + MAE), released in Hugging Face format: the most
# human-aligned public CLAPScore (SRCC 0.457 on RELATE test vs 0.280 for LAION CLAP).
DEFAULT_MODEL = "sarulab-speech/human-clap-wsce-mae"

# LAION CLAP's text length in RoBERTa tokens, <s> and </s> included.
TEXT_MAX_LENGTH = 77

# The most rows ``humanclap score`` prepares and writes per step (--batch-size). It bounds the
# audio decoded ahead of the model (features of up to this many clips in memory at once); the
# model's forward shape is the embedding engine's own and does not grow with it.
MAX_BATCH_SIZE = 1024

# The most bootstrap resamples (--n-boot): the resample index matrix is n_boot x pairs, so
# 10**9 would ask for gigabytes per pair; 10**5 already pins a 95% CI to well under 1%.
MAX_N_BOOT = 100_000

# Characters of a text handed to the tokenizer. CLAP reads only the first 77 tokens (a few
# hundred characters; no token is anywhere near 250 characters long), so cutting here never
# changes a score, while tokenizing a 10 MB caption whole took minutes.
MAX_TEXT_CHARS = 20_000
