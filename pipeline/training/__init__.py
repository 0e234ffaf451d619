"""Training with Lightning: windows over the token arrays, the LightningModule, Muon with AdamW,
callbacks that watch the run, checkpoints that resume exactly, and the train stage."""
