"""Baseline populations: stored fingerprints of independently trained models.

A population is a folder::

    population.json            name, description, seed, members (metadata, the
                               content hash of each member's tensors, the
                               SHA-256 of every fingerprint and of pairs.json)
    models/NAME/KIND.npz       one fingerprint per method kind (kilobytes to MBs)
    pairs.json                 per method: every member pair's similarity and,
                               for the within-pair tests, its p-value (the
                               population's null and calibration, cached)

Pairs of members form each method's empirical null; every pair's own
p-value is the population's calibration check.  Writes are locked and
all-or-nothing, reads are checked (:mod:`audit.baselines.store`); a
population travels as one bundle file (:mod:`audit.baselines.bundle`).
"""

from audit.baselines.population import Member, PairTable, Population

__all__ = ["Member", "PairTable", "Population"]
