"""Which factors track a sample annotation (a technical batch, sex, age...) rather than disease.

MOFA+ users check factors against covariates before reading them biologically; this is that
table for MSSVAE factors.  Each factor is tested only on the samples that own it (a study's
own factors are zero elsewhere by construction, §2.2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = ["factor", "covariate", "test", "statistic", "effect", "n_samples", "p_value", "p_adj"]


def factor_associations(Z, obs: pd.DataFrame, covariates, factor_names=None, owner=None,
                        min_samples: int = 6) -> pd.DataFrame:
    """Association of every factor with every named covariate.

    Parameters
    ----------
    Z : array (n_samples, K)
        Factor scores, e.g. ``model.transform(X, study)``.
    obs : DataFrame with n_samples rows
        Sample annotations (e.g. ``adata.obs``).
    covariates : str or list of str
        Columns of ``obs`` to test.  Numeric columns with more than 10 distinct values: Spearman
        correlation (effect = ρ).  Otherwise categorical: Kruskal-Wallis across the levels
        (effect = ε² = H / (n − 1), the share of rank variance between levels).
    factor_names : list of str, optional
        Names of the K columns (default ``factor_k``).
    owner : array (n_samples, K) of bool, optional
        Which samples own which factor (e.g. ``model.module_.latent_mask``); default: all.
    min_samples : int
        Pairs with fewer usable samples (or one level only) are reported with NaN.

    Returns
    -------
    DataFrame with columns factor, covariate, test, statistic, effect, n_samples, p_value and
    p_adj (Benjamini-Hochberg over the whole table), sorted by p_value.
    """
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2:
        raise ValueError(f"`Z` must be 2-D (n_samples, K); got shape {Z.shape}")
    if not isinstance(obs, pd.DataFrame) or len(obs) != Z.shape[0]:
        raise ValueError(f"`obs` must be a DataFrame with {Z.shape[0]} rows (one per sample of Z)")
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    missing = [c for c in covariates if c not in obs.columns]
    if missing:
        raise ValueError(f"`covariates` {missing} are not columns of `obs` (columns: {list(obs.columns)[:10]})")
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(Z.shape[1])]
    if len(names) != Z.shape[1]:
        raise ValueError(f"`factor_names` has {len(names)} names for {Z.shape[1]} factors")
    own = np.ones(Z.shape, dtype=bool) if owner is None else np.asarray(owner, dtype=bool)
    if own.shape != Z.shape:
        raise ValueError(f"`owner` must have the shape of `Z` {Z.shape}; got {own.shape}")

    rows = []
    for cov in covariates:
        values = obs[cov].reset_index(drop=True)
        numeric = pd.api.types.is_numeric_dtype(values) and values.nunique() > 10
        for k, name in enumerate(names):
            keep = own[:, k] & values.notna().to_numpy() & np.isfinite(Z[:, k])
            z, v = Z[keep, k], values[keep]
            stat = effect = p = np.nan
            if numeric:
                test = "spearman"
                if keep.sum() >= min_samples and np.ptp(z) > 0:
                    stat, p = stats.spearmanr(z, v.to_numpy(dtype=float))
                    effect = stat
            else:
                test = "kruskal"
                groups = [z[(v == level).to_numpy()] for level in pd.unique(v)]
                groups = [g for g in groups if len(g) > 0]
                if keep.sum() >= min_samples and len(groups) > 1 and np.ptp(z) > 0:
                    stat, p = stats.kruskal(*groups)
                    effect = stat / (keep.sum() - 1)
            rows.append(dict(factor=name, covariate=cov, test=test, statistic=stat, effect=effect,
                             n_samples=int(keep.sum()), p_value=p))
    table = pd.DataFrame(rows, columns=COLUMNS[:-1])
    tested = table["p_value"].notna().to_numpy()
    table["p_adj"] = np.nan
    if tested.any():
        table.loc[tested, "p_adj"] = stats.false_discovery_control(table.loc[tested, "p_value"].to_numpy())
    return table.sort_values("p_value", na_position="last").reset_index(drop=True)


def model_factor_associations(model, X, study, obs: pd.DataFrame, covariates, **kwargs) -> pd.DataFrame:
    """:func:`factor_associations` for a fitted ``MSSVAE``: Z = ``model.transform(X, study)``,
    each factor tested on the samples that own it (all samples for shared factors, study m's
    for study m's).  ``obs`` has one row per sample of X, in the same order."""
    Z = model.transform(X, study)
    return factor_associations(Z, obs, covariates, factor_names=model.factor_names_,
                               owner=factor_owner(model, study), **kwargs)


def factor_owner(model, study) -> np.ndarray:
    """(N, K) bool: sample i has factor k (every sample its shared factors, study m's samples study
    m's own), in the column order of ``model.factor_names_``."""
    labels = np.asarray(study).astype(str)
    owner = np.zeros((len(labels), len(model.factor_names_)), dtype=bool)
    owner[:, : model.module_.n_shared] = True
    for lab, k, start in zip(model.studies_, model.module_.n_specific, model.module_.block_starts):
        owner[labels == str(lab), start:start + k] = True
    return owner
