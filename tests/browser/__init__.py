"""Browser tests: Playwright driving Debian's Chromium against a real ``z4j serve``."""
