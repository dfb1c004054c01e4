"""pix2seq_d2/data"""
