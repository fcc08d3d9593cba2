"""Embedding banks: storage and versions (`registry`), what a worker matches (`live`), and a
bank change backtested on stored traffic (`backtest`). The matching maths is
`clipmod.policy.banks`, next to the verdict rule that uses it."""
