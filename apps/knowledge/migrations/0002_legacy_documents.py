from django.db import migrations


class Migration(migrations.Migration):
    """The documents and chunks before knowledge bases, set aside so that 0003 can move them into
    a knowledge base of their own."""

    dependencies = [("knowledge", "0001_initial")]

    operations = [
        migrations.RemoveConstraint(model_name="chunk", name="knowledge_chunk_ordinal_unique"),
        migrations.RemoveIndex(model_name="chunk", name="knowledge_chunk_embedding_hnsw"),
        migrations.RenameModel(old_name="Document", new_name="LegacyDocument"),
        migrations.RenameModel(old_name="Chunk", new_name="LegacyChunk"),
    ]
