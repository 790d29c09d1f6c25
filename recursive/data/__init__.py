"""Data for the lineage: registered sources (`sources`), the shared tokenizer (`tokenizer`),
token shards and the mixture sampler (`shards`), and the per-run build (`prepare`).

Nothing is imported here, so `import recursive.data.shards` stays free of transformers."""
