import ember.passes


@ember.passes.register("explode", description="rewrites half the graph, then raises")
def explode(graph):
    graph.name = "half-done"
    raise RuntimeError("pass exploded midway")
