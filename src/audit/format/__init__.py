"""Output shaping, apart from the audit itself: terminal text (:mod:`.text`) and the JSON documents
(:mod:`.json`) that the CLI prints, ``--json`` writes and the signed report's manifest carries.

The core (compare, auditor, inspection, baselines) returns result objects only;
a new output format is one new module here.
"""
