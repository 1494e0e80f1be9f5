"""Cat2Vec: gensim Word2Vec over each click's categorical tokens, as a scikit-learn transformer.

A click is a sentence of field-prefixed tokens (`ip:87540 app:12 device:1 os:13 channel:497`), shuffled
within the row with a fixed seed so no field always sits at a sentence edge. A row's vector is the
per-field vectors concatenated in a fixed field order; a token unseen in training (or below min_count)
maps to NaN, which XGBoost treats as missing (zeros would be an ordinary, learnable value, shared with
every id whose vector happens to sit near the origin).

The corpus is label-free, so fitting it on the whole training window (tuning part included) leaks no
label into early stopping or tuning; the pipeline fits it once and every later step reuses the vectors. Vectors persist as an .npz array file plus a JSON vocabulary, never gensim's pickle.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from attribution.schema import ID_FIELDS

log = logging.getLogger(__name__)
FIELDS: tuple[str, ...] = ID_FIELDS  # the tokens of a click's sentence


def stable_hash(token: str) -> int:
    """gensim seeds each word's initial vector with hashfxn(word); Python's str hash changes per process."""
    return zlib.crc32(token.encode())


class ClickSentences:
    """A restartable stream of token sentences (gensim iterates it once per epoch); nothing is listed in
    memory beyond the id arrays themselves."""

    def __init__(self, ids: dict[str, np.ndarray], seed: int, chunk: int = 100_000) -> None:
        self.ids, self.seed, self.chunk = ids, seed, chunk
        self.n = len(next(iter(ids.values())))

    def __iter__(self) -> Iterator[list[str]]:
        rng = np.random.default_rng(self.seed)  # same shuffles every epoch and every run
        names = list(self.ids)
        for start in range(0, self.n, self.chunk):
            stop = min(start + self.chunk, self.n)
            cols = [[f"{f}:{v}" for v in self.ids[f][start:stop].tolist()] for f in names]
            perms = np.argsort(rng.random((stop - start, len(names))), axis=1)
            for i, perm in enumerate(perms.tolist()):
                yield [cols[j][i] for j in perm]

    def __len__(self) -> int:
        return self.n


class Cat2Vec(BaseEstimator, TransformerMixin):
    def __init__(
        self,
        fields: tuple[str, ...] = FIELDS,
        vector_size: int = 8,
        min_count: int = 3,
        epochs: int = 5,
        max_fit_rows: int | None = 300_000,
        seed: int = 0,
        workers: int = 1,
    ) -> None:
        self.fields = fields
        self.vector_size = vector_size
        self.min_count = min_count
        self.epochs = epochs
        self.max_fit_rows = max_fit_rows
        self.seed = seed
        self.workers = workers

    # ---- fit ----------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: object = None) -> Cat2Vec:
        from gensim.models import Word2Vec

        ids = {f: X[f].to_numpy() for f in self.fields}
        n = len(X)
        if self.max_fit_rows and n > self.max_fit_rows:
            # Co-occurrence statistics settle long before 184.9M rows; a seeded uniform sample keeps the fit
            # a bounded cost. Rare ids outside the sample are missing (NaN), as unseen ids are.
            keep = np.sort(np.random.default_rng(self.seed).choice(n, self.max_fit_rows, replace=False))
            ids = {f: v[keep] for f, v in ids.items()}
        sentences = ClickSentences(ids, self.seed)
        model = Word2Vec(
            sentences=sentences,
            vector_size=self.vector_size,
            window=len(self.fields),  # the whole click is the context
            min_count=self.min_count,
            sg=1,
            negative=5,
            epochs=self.epochs,
            seed=self.seed,
            workers=self.workers,
            hashfxn=stable_hash,
            sorted_vocab=1,
        )
        self._set_vectors(list(model.wv.index_to_key), np.asarray(model.wv.vectors, dtype=np.float32))
        self.words_trained_ = int(model.corpus_total_words) * self.epochs
        log.info("cat2vec: %d tokens in vocabulary from %d sentences", len(self.vocabulary_), len(sentences))
        return self

    def _set_vectors(self, vocabulary: list[str], vectors: np.ndarray) -> None:
        self.vocabulary_ = vocabulary
        self.vectors_ = vectors
        # Per field: sorted known ids and their row in `vectors_`, for a vectorised lookup.
        self.lookup_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for f in self.fields:
            prefix = f + ":"
            pairs = [(int(tok[len(prefix):]), i) for i, tok in enumerate(vocabulary) if tok.startswith(prefix)]
            pairs.sort()
            keys = np.array([p[0] for p in pairs], dtype=np.int64)
            rows = np.array([p[1] for p in pairs], dtype=np.int64)
            self.lookup_[f] = (keys, rows)
        self.vectors_or_nan_ = np.vstack([vectors, np.full((1, vectors.shape[1]), np.nan, vectors.dtype)])

    # ---- transform ------------------------------------------------------------------------------
    def transform(self, X: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(X[self.fields[0]])
        return self.transform_into(X, np.empty((n, len(self.fields) * self.vector_size), dtype=np.float32))

    def transform_into(self, X: pd.DataFrame | Mapping[str, np.ndarray], out: np.ndarray) -> np.ndarray:
        """transform() written into `out` (n x fields * vector_size, float32, a block of a wider matrix):
        the predictor builds the booster's whole matrix in one allocation. Unknown ids get NaN."""
        for j, f in enumerate(self.fields):
            keys, rows = self.lookup_[f]
            block = out[:, j * self.vector_size : (j + 1) * self.vector_size]
            if not len(keys):
                block[:] = np.nan
                continue
            vals = np.asarray(X[f]).astype(np.int64, copy=False)
            pos = np.searchsorted(keys, vals)
            np.minimum(pos, len(keys) - 1, out=pos)
            # unknown ids read the NaN row past the vocabulary's vectors: one gather, no masked copy
            block[:] = self.vectors_or_nan_[np.where(keys[pos] == vals, rows[pos], len(self.vectors_))]
        return out

    def feature_names(self) -> list[str]:
        return [f"c2v_{f}_{k}" for f in self.fields for k in range(self.vector_size)]

    get_feature_names_out = lambda self, input_features=None: np.array(self.feature_names())

    # ---- persistence: arrays + JSON, no pickle ---------------------------------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "cat2vec_vectors.npy", self.vectors_, allow_pickle=False)
        (d / "cat2vec_vocab.json").write_text(
            json.dumps({"params": self.get_params(), "vocabulary": self.vocabulary_}, separators=(",", ":"))
        )

    @classmethod
    def load(cls, directory: str | Path) -> Cat2Vec:
        d = Path(directory)
        meta = json.loads((d / "cat2vec_vocab.json").read_text())
        params = meta["params"]
        params["fields"] = tuple(params["fields"])
        obj = cls(**params)
        vectors = np.load(d / "cat2vec_vectors.npy", allow_pickle=False)
        if vectors.shape != (len(meta["vocabulary"]), obj.vector_size):
            raise ValueError(
                f"{d}: cat2vec vectors have shape {vectors.shape}, vocabulary needs "
                f"({len(meta['vocabulary'])}, {obj.vector_size})"
            )
        obj._set_vectors(meta["vocabulary"], vectors)
        return obj
