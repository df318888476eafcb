"""The review TUI (the only Textual code in the package). Import `ui.app` lazily: it pulls in
Textual, which `sportvlm --help` must not pay for."""
