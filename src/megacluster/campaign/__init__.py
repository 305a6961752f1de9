"""Campaigns: a whole training run in days, megawatts, water, carbon and dollars, and the named scenarios of
the supercomputers in the news."""

from .assumptions import Assumption
from .campaign import CampaignResult, campaign_from_step, run_campaign

__all__ = ["Assumption", "CampaignResult", "campaign_from_step", "run_campaign"]
