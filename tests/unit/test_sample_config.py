"""confero.sample.toml is generated from the settings model and must stay in sync with it."""

from pathlib import Path

from confero.settings import Settings

SAMPLE = Path(__file__).resolve().parents[2] / "confero.sample.toml"


def test_sample_file_matches_the_model() -> None:
    assert SAMPLE.read_text() == Settings.sample_toml(), (
        "regenerate: python -c 'from confero.settings import Settings; print(Settings.sample_toml(), end=\"\")' > confero.sample.toml"
    )


def test_sample_file_loads_to_the_defaults() -> None:
    settings = Settings()
    settings.apply_file(SAMPLE)
    settings.validate()
    defaults = Settings()
    for field in Settings.server_fields():
        assert getattr(settings, field.name) == getattr(defaults, field.name), field.name
