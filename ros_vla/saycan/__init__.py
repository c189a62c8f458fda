"""SayCan (Ahn, Ichter et al. 2022): language-model scores x affordances choose each next skill."""
