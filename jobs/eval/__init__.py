"""The ``mediascore eval`` commands and their metrics."""
