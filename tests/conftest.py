import pytest

import vmkit


@pytest.fixture
def build():
    """Assemble a test kernel (see guestkit.kernel) into an Image."""
    from guestkit import kernel

    def _build(**parts):
        return vmkit.assemble(kernel(**parts))
    return _build
