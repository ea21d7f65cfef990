from pathlib import Path

from s3mount.docs import BEGIN, END, options_markdown, render_readme
from s3mount.options import OPTIONS, Status

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_option_list_matches_the_option_table():
    text = README.read_text()
    assert render_readme(text) == text, "run: python -m s3mount.docs (README.md is stale)"


def test_every_option_is_documented():
    generated = options_markdown()
    for option in OPTIONS:
        assert f"`{option.name}`" in generated, option.name
    for option in OPTIONS:
        if option.status is Status.UNSUPPORTED:
            assert option.note in generated


def test_render_replaces_only_the_marked_block():
    text = f"before\n{BEGIN}\nstale\n{END}\nafter\n"
    rendered = render_readme(text)
    assert rendered.startswith(f"before\n{BEGIN}\n") and rendered.endswith(f"{END}\nafter\n")
    assert "stale" not in rendered
