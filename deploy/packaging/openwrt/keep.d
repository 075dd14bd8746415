/etc/fieldpass/
