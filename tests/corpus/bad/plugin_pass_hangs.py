import ember.passes


@ember.passes.register("spin-forever", description="never returns")
def spin_forever(graph):
    while True:
        pass
