"""Order of the gallery: the defender's workflow, not the file names."""

WORKFLOW = (
    "plot_neural_cleanse.py",  # is the model backdoored, towards which label?
    "plot_strip_entropy.py",  # flag poisoned inputs at run time
    "plot_fine_pruning.py",  # repair the model
    "plot_activation_maps.py",  # why pruning dormant channels works
    "plot_goodnet_grid_search.py",  # serve a GoodNet and tune it
)


class WorkflowOrder:
    """sphinx-gallery ``within_subsection_order`` key: examples in ``WORKFLOW`` order, others after."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        return (WORKFLOW.index(filename), filename) if filename in WORKFLOW else (len(WORKFLOW), filename)

    def __repr__(self):
        return f"<{type(self).__name__}>"
