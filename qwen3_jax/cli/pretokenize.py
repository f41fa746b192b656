"""`qwen3-jax pretokenize`: tokenize a JSONL / Parquet / text source once into ArrayRecord files."""

from __future__ import annotations

HELP = "tokenize a text data source into ArrayRecord files (data kind array_record)"


def add_arguments(p):
    p.add_argument("path", help="the source: a file, a directory or a glob")
    p.add_argument("out_dir", help="new directory for part-NNNNN.array_record and manifest.json")
    p.add_argument("--kind", default="jsonl", choices=["jsonl", "parquet", "text"])
    p.add_argument("--text-field", default="text", help="JSON key / Parquet column of the text")
    p.add_argument("--pattern", default=None, help="glob of the files under a directory path")
    p.add_argument("--tokenizer", default=None,
                   help="a checkpoint directory or tokenizer.json; default: the Qwen3 tokenizer")
    p.add_argument("--docs-per-file", type=int, default=100_000)


def run(args) -> int:
    from qwen3_jax.cli.main import UserError
    from qwen3_jax.text.tokenizer import Tokenizer
    from qwen3_jax.train.data.config import DataError, SourceConfig
    from qwen3_jax.train.data.files import resolve_files
    from qwen3_jax.train.data.pretokenize import pretokenize

    try:
        src = SourceConfig(path=args.path, kind=args.kind, text_field=args.text_field, pattern=args.pattern)
        resolve_files(src)  # a bad path fails before the tokenizer loads
        tok = Tokenizer.from_pretrained(args.tokenizer) if args.tokenizer else Tokenizer.qwen3()
        manifest = pretokenize(src, args.out_dir, tok, docs_per_file=args.docs_per_file, progress=True)
    except DataError as e:
        raise UserError(str(e)) from None
    print(f"{args.out_dir}: {manifest['documents']} documents, {manifest['tokens']} tokens, "
          f"{len(manifest['files'])} files")
    return 0
