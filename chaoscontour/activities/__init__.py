"""The activities that `chaos discover` lists, grouped by what they act on."""
