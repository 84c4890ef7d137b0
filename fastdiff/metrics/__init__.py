"""Distribution metrics for generated samples: Fréchet distance / KID over pluggable features, sliced W, MMD."""
from __future__ import annotations

from fastdiff.metrics.features import (ClassifierFeatures, FeatureError, FeatureExtractor, InceptionFeatures,
                                       RawFeatures, get_features)
from fastdiff.metrics.fid import (FrechetDistance, KernelDistance, SampleSetMetric, frechet_distance, kid_subsets,
                                  mean_cov)
from fastdiff.metrics.stats import (ReferenceStats, StatsMismatchError, compute_stats, load_data_tensor, load_stats,
                                    save_stats)
from fastdiff.metrics.toy import MMD, SlicedWasserstein, mmd_rbf, sliced_wasserstein

__all__ = ["ClassifierFeatures", "FeatureError", "FeatureExtractor", "FrechetDistance", "InceptionFeatures",
           "KernelDistance", "MMD", "RawFeatures", "ReferenceStats", "SampleSetMetric", "SlicedWasserstein",
           "StatsMismatchError", "compute_stats", "frechet_distance", "get_features", "kid_subsets",
           "load_data_tensor", "load_stats", "mean_cov", "mmd_rbf", "save_stats", "sliced_wasserstein"]
