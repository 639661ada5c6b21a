import pytest


@pytest.fixture(scope="session")
def qm9_train():
    """The EDM training split with bonds (built once into the user cache; ~80 s the first time)."""
    from reed_molecule.data import QM9Dataset

    return QM9Dataset("train", progress=False)
