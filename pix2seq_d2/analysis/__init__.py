"""Looking inside a model: FLOP and parameter counts (:mod:`.flops`), the distributions behind each
predicted token (:mod:`.beliefs`), and where in its sequences a model finds and repeats objects
(:mod:`.positions`)."""
