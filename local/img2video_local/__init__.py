"""Local mode for img2video: embedded AWS (moto), a Novita emulator and the CLI. Never shipped to Lambda."""
