"""shapdiff's Textual app. Thin: asks engine/ and draws; never imports torch at load."""
