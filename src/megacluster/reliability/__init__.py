"""Failures at scale: reliability profiles, the checkpoint model and a Monte Carlo of a campaign's goodput."""

from .checkpoint import CheckpointCost, bytes_per_param, checkpoint_cost
from .failures import job_rates, mttf_hours
from .intervals import daly, exponential_optimum, young
from .profiles import Profile, load_profile, profile_names
from .simulate import ReliabilityResult, simulate_reliability

__all__ = ["CheckpointCost", "Profile", "ReliabilityResult", "bytes_per_param", "checkpoint_cost", "daly",
           "exponential_optimum", "job_rates", "load_profile", "mttf_hours", "profile_names",
           "simulate_reliability", "young"]
