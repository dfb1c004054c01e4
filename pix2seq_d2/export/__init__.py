"""pix2seq_d2/export"""
