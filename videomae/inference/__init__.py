"""Using a trained model: load it for inference, predict classes of videos, extract clip features.

Every video is decoded once: the frames of all its views (prediction) or of all its sliding clips (features)
come from one read, and overlapping clips share frames.
"""

from videomae.inference.feature_runs import FeatureSettingsError
from videomae.inference.features import FeatureFile, extract_features, sliding_clips
from videomae.inference.loading import InferenceModel, load_inference_model
from videomae.inference.predict import VideoPrediction, predict_videos

__all__ = [
    "FeatureFile",
    "FeatureSettingsError",
    "InferenceModel",
    "VideoPrediction",
    "extract_features",
    "load_inference_model",
    "predict_videos",
    "sliding_clips",
]
