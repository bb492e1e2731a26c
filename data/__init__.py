"""Files shipped inside the minddpm package as `minddpm.assets`: the bundled dataset (and later a small checkpoint)."""
