"""Readers and converters for checkpoints of other Pix2Seq implementations."""
