"""Word-level LSTM language models: training, distillation with trust regularization, N-best rescoring.

The acoustic side of kdasr ends its search with an n-gram; this package adds
the recurrent LMs that rescore the search's N-best lists (``kdasr lm``,
``kdasr rescore``). Text is plain UTF-8, one sentence a line.
"""
