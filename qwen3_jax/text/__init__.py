"""Text side of qwen3_jax: the Qwen3 tokenizer and the chat format.

* ``tokenizer.Tokenizer``: byte-level BPE on the ``tokenizers`` library, loaded
  from a checkpoint's ``tokenizer.json`` or built from Qwen's tiktoken ranks.
* ``chat``: renders conversations exactly as the Qwen3 chat template does,
  decides thinking vs. non-thinking mode, and parses model output (reasoning,
  content, tool calls), one-shot or streaming.
"""
