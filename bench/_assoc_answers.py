"""What a trained model's answers on ``assoc`` hold, for the forgetting-curve benchmark's
results.csv (``bench/retention_curve.py``): the answers against the values present (the
key-blind score), and the answers when each example is asked about each of its facts in turn
(whether the answer follows the key; the accuracy over every fact by age). Each function takes
the test split's tokens and the model or its answers, and returns the row's columns.
"""

from __future__ import annotations


def answer_columns(tokens, answers) -> dict:
    """assoc: ``pred_present`` (the share of answers that are the value of one of the example's
    facts) and ``blind_acc`` (their mean key-blind score) of a run's answers on ``tokens``."""
    from rmaat_model.data.assoc import key_blind_score

    blind = key_blind_score(tokens, answers)
    return {"pred_present": round(float((blind > 0).mean()), 4), "blind_acc": round(float(blind.mean()), 4)}


#: test examples whose K questions ``every_query_columns`` asks (a share over 1024 examples:
#: standard error at most 1.6 points)
EVERY_QUERY_EXAMPLES = 1024


def every_query_columns(model, tokens, segment_len: int) -> dict:
    """assoc, K > 1: the first ``EVERY_QUERY_EXAMPLES`` test examples asked about each of their K
    facts (``rmaat_model.data.assoc.every_query``). ``key_use``: the share of those examples
    whose answer changes with the fact the query names: 0 for a model that ignores the key,
    whatever it holds, near 1 for one that reads it. Reading the key is not binding (an answer
    can follow the key without being that key's value): the binding, test_acc - blind_acc, says
    whether it pays. ``every_age_a``: the accuracy over every fact of age a (K questions per
    example instead of one: the forgetting curve without the draw of which fact is queried).
    Empty at K = 1 (one fact: nothing else to ask)."""
    import torch

    from rmaat_model.data.assoc import every_query
    from rmaat_model.data.synthetic import RecallDataset
    from rmaat_model.evaluate import predictions

    asked, values, ages = every_query(tokens[:EVERY_QUERY_EXAMPLES], segment_len)
    n, K, L = asked.shape
    if K == 1:
        return {}
    flat = torch.from_numpy(asked.reshape(n * K, L))
    answers = predictions(model, RecallDataset(flat, torch.from_numpy(values.reshape(n * K)))).view(n, K).numpy()
    right = answers == values
    out = {"key_use": round(float((answers != answers[:, :1]).any(axis=1).mean()), 4)}
    out.update({f"every_age_{a}": round(float(right[ages == a].mean()), 4) for a in sorted(set(ages.ravel().tolist()))})
    return out
