"""Test fixtures and benchmark tables: synthetic checkpoints (:mod:`.synth`), accuracy on a labelled zoo
(:mod:`.accuracy`), function-preserving disguises (:mod:`.disguise`, :mod:`.forward`).  Nothing here is
imported by the command line or the audit itself."""
