"""Constants shared by the library and the CLI (kept import-free so the CLI starts fast)."""

# The paper's best variant (wSCE + MAE), released in Hugging Face format: the most
# human-aligned public CLAPScore (SRCC 0.457 on RELATE test vs 0.280 for LAION CLAP).
DEFAULT_MODEL = "sarulab-speech/human-clap-wsce-mae"

# LAION CLAP's text length in RoBERTa tokens, <s> and </s> included.
TEXT_MAX_LENGTH = 77
