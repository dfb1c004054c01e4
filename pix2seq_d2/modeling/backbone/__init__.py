"""pix2seq_d2/modeling/backbone"""
